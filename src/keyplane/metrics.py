"""Process-wide counters, served as Prometheus text at GET /metrics (per worker process)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Metrics:
    auth_failures: Counter[str] = field(default_factory=Counter)
    rate_limited: Counter[str] = field(default_factory=Counter)
    # Checks (permissions/checks/) that failed with something other than a refusal, by name.
    check_failures: Counter[str] = field(default_factory=Counter)

    def render(
        self,
        *,
        rate_limit_storage_failures: int,
        usage_pending_keys: int,
        credential_version_failures: int,
    ) -> str:
        lines = [
            "# HELP keyplane_auth_failures_total Requests refused with 401, by reason.",
            "# TYPE keyplane_auth_failures_total counter",
            *(
                f'keyplane_auth_failures_total{{reason="{reason}"}} {count}'
                for reason, count in sorted(self.auth_failures.items())
            ),
            "# HELP keyplane_rate_limited_total Requests refused with 429, by tier.",
            "# TYPE keyplane_rate_limited_total counter",
            *(
                f'keyplane_rate_limited_total{{tier="{tier}"}} {count}'
                for tier, count in sorted(self.rate_limited.items())
            ),
            "# HELP keyplane_check_failures_total Checks that raised an error (refused as "
            "FORBIDDEN), by check.",
            "# TYPE keyplane_check_failures_total counter",
            *(
                f'keyplane_check_failures_total{{check="{name}"}} {count}'
                for name, count in sorted(self.check_failures.items())
            ),
            "# HELP keyplane_rate_limit_storage_failures_total Rate-limit storage errors "
            "(requests served without a limit unless failing closed).",
            "# TYPE keyplane_rate_limit_storage_failures_total counter",
            f"keyplane_rate_limit_storage_failures_total {rate_limit_storage_failures}",
            "# HELP keyplane_usage_pending_keys Keys with usage counts not yet flushed.",
            "# TYPE keyplane_usage_pending_keys gauge",
            f"keyplane_usage_pending_keys {usage_pending_keys}",
            "# HELP keyplane_credential_version_failures_total Changes to keys or sessions "
            "that could not move the credentials' version (other workers may trust what they "
            "kept for up to KEYPLANE_CREDENTIAL_CACHE_SECONDS).",
            "# TYPE keyplane_credential_version_failures_total counter",
            f"keyplane_credential_version_failures_total {credential_version_failures}",
        ]
        return "\n".join(lines) + "\n"
