"""Tag stage: merge the key's tags, OpenAI ``metadata`` and ``X-TokenOps-Tags``; apply the tagging policy.

Bounds: the header is at most 4 KiB and a call carries at most 32 tags (the key's included); an end user
(``X-TokenOps-User``) is printable text of at most 256 characters. Beyond them the call is a 400.
"""

from __future__ import annotations

from tokenops.call import Call
from tokenops.errors import GatewayError
from tokenops.tags import TagError, TaggingPolicy, check_count, parse_tags, tags_from_metadata

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
        user = call.body.get("user")
        if not isinstance(user, str) or not user:
            meta = call.body.get("metadata")
            user = meta.get("user_id") if call.flavor == "anthropic" and isinstance(meta, dict) else None
        if not (isinstance(user, str) and user):
            user = call.headers.get(USER_HEADER) or None
            if user is not None and (len(user) > 256 or not user.isprintable()):
                raise GatewayError(400, "invalid_request", "X-TokenOps-User must be printable text of at most 256 "
                                   "characters", param="X-TokenOps-User")  # fmt: skip
        call.end_user = user
        problems = self.policy.violations(tags)
        if problems:
            if self.policy.mode == "enforce":
                raise GatewayError(400, "tag_policy_violation", "tagging policy: " + "; ".join(problems))
            call.missing_tags = tuple(self.policy.missing(tags))
