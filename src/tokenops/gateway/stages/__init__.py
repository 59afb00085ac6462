"""The gateway's stages, in order: key → tags → policy → cache → router (then upstream → meter).

Each stage is a small object with ``async def __call__(self, call)``: it reads and fills the
:class:`~tokenops.call.Call`, or raises :class:`~tokenops.errors.GatewayError` to answer the client
with an error. They are assembled in one place, :func:`tokenops.gateway.app.build_stages`.
"""
