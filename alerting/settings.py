"""The alert settings, re-exported from where they now live below the `alerting` package: the
frozen types in core (`healthcheck.alert_settings`, a Config carries them) and the `alerting:`
section's readers in config (`healthcheck.alerting_section`)."""

from healthcheck.alert_settings import (
    ALIVE_RESENDS,
    CHANNEL_KINDS,
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_EVALUATE_EVERY,
    DEFAULT_REPEAT,
    DEFAULT_RESEND,
    DEFAULT_ROUTES,
    MAX_DELIVERY_TIMEOUT,
    MAX_RESEND,
    OVERRIDABLE,
    AlertingSettings,
    AlertOverrides,
    ChannelSettings,
    RuleSettings,
)
from healthcheck.alerting_section import (
    delivery_timeout,
    overrides,
    read_alerting,
    read_overrides,
    resend_period,
)

__all__ = [
    "ALIVE_RESENDS",
    "CHANNEL_KINDS",
    "DEFAULT_DELIVERY_TIMEOUT",
    "DEFAULT_EVALUATE_EVERY",
    "DEFAULT_REPEAT",
    "DEFAULT_RESEND",
    "DEFAULT_ROUTES",
    "MAX_DELIVERY_TIMEOUT",
    "MAX_RESEND",
    "OVERRIDABLE",
    "AlertOverrides",
    "AlertingSettings",
    "ChannelSettings",
    "RuleSettings",
    "delivery_timeout",
    "overrides",
    "read_alerting",
    "read_overrides",
    "resend_period",
]
