"""Tag stage: merge the key's tags, OpenAI ``metadata`` and ``X-TokenOps-Tags``; apply the tagging policy; find
the end user (the key's ``end_user``, else ``X-TokenOps-User``, else the body: see :meth:`TagStage.end_user`).

Bounds: the header is at most 4 KiB and a call carries at most 32 tags (the key's included); an end user
(``X-TokenOps-User``) is printable text of at most 256 characters. Beyond them the call is a 400.
"""

from __future__ import annotations

from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.tags import (
    MAX_END_USER,
    TagError,
    TaggingPolicy,
    check_count,
    end_user_id,
    parse_tags,
    tags_from_metadata,
    valid_end_user,
)

TAGS_HEADER = "x-tokenops-tags"
USER_HEADER = "x-tokenops-user"


class TagStage:
    def __init__(self, policy: TaggingPolicy):
        self.policy = policy

    async def __call__(self, call: Call) -> None:
        key = call.key
        tags = dict(key.tags) if key else {}
        if call.flavor == "openai":  # Anthropic's metadata holds only user_id, which is the end user, not a tag
            tags.update(tags_from_metadata(call.body.get("metadata")))
        header = call.headers.get(TAGS_HEADER)
        if header is not None:
            try:
                tags.update(parse_tags(header, what="X-TokenOps-Tags header"))
            except TagError as exc:
                raise GatewayError(400, "invalid_tags", str(exc), param="X-TokenOps-Tags") from None
        if key:
            for name in key.locked_tags:
                if name in key.tags:
                    tags[name] = key.tags[name]
        try:
            check_count(tags)
        except TagError as exc:
            raise GatewayError(400, "invalid_tags", str(exc), param="X-TokenOps-Tags") from None
        call.tags = tags
        call.end_user = self.end_user(call)
        problems = self.policy.violations(tags)
        if problems:
            if self.policy.mode == "enforce":
                raise GatewayError(400, "tag_policy_violation", "tagging policy: " + "; ".join(problems))
            call.missing_tags = tuple(self.policy.missing(tags))

    @staticmethod
    def end_user(call: Call) -> str | None:
        """Who the call is for, first found: the key's ``end_user`` (a key handed to one person), the
        ``X-TokenOps-User`` header, the body (``user``; Anthropic ``metadata.user_id``, Claude Code's
        session-bearing ids resolved to the person; ``safety_identifier`` or ``user`` on the Responses API)."""
        header = (call.headers.get(USER_HEADER) or "").strip() or None
        if header is not None and not valid_end_user(header):
            raise GatewayError(400, "invalid_request", f"X-TokenOps-User must be printable text of at most "
                               f"{MAX_END_USER} characters", param="X-TokenOps-User")  # fmt: skip
        if call.key and call.key.end_user:
            return call.key.end_user
        if header is not None:
            return header
        body = call.body
        if call.flavor == "anthropic":
            meta = body.get("metadata")
            user = meta.get("user_id") if isinstance(meta, dict) else None
            return end_user_id(user) if isinstance(user, str) and user else None
        names = ("safety_identifier", "user") if call.route == "responses" else ("user",)
        for name in names:
            value = body.get(name)
            if isinstance(value, str) and value:
                return value
        return None
