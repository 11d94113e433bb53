"""The service rules, taken from the settings once (services never read settings directly)."""

from datetime import timedelta

from cloud_api.core.config import Settings
from cloud_api.core.rating_links import RatingLinks
from cloud_api.services.codes import CodePolicy, LostCodePolicy
from cloud_api.services.handovers import HandoverPolicy


def from_settings(settings: Settings) -> HandoverPolicy:
    return HandoverPolicy(
        codes=CodePolicy(
            master_secret=settings.master_key,
            digits=settings.code_digits,
            lockout_threshold=settings.lockout_threshold,
            lockout_base_seconds=settings.lockout_base_seconds,
            lockout_max_seconds=settings.lockout_max_seconds,
            overdue_code_keeps_working=settings.overdue_code_keeps_working,
        ),
        dropoff_reservation=timedelta(hours=settings.dropoff_reservation_hours),
        pickup_load=timedelta(hours=settings.pickup_load_hours),
        retention=settings.retention,
        resend_min_interval=timedelta(seconds=settings.resend_min_interval_seconds),
        resend_max=settings.resend_max_per_handover,
        service_phone=settings.service_phone,
        rating_links=RatingLinks.from_settings(settings),
        lost_codes=LostCodePolicy(
            per_record_per_day=settings.lost_code_per_record_per_day,
            per_locker_per_hour=settings.lost_code_per_locker_per_hour,
            max_age_seconds=settings.lost_code_max_age_seconds,
        ),
    )
