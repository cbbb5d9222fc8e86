"""OTP texts and taking the code out of them once sent."""

from datetime import UTC, datetime, timedelta

from messaging.dispatch.otp import otp_text, redact
from messaging.settings import MessagingSettings

TEMPLATE = MessagingSettings().sms_otp_text


def test_the_text_says_the_whole_minutes_left_rounded_up():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert otp_text(TEMPLATE, "123456", now + timedelta(seconds=298), now) == (
        "Your Switchboard code is 123456. It expires in 5 minutes."
    )
    assert "expires in 1 minutes" in otp_text(TEMPLATE, "1", now + timedelta(seconds=5), now)


def test_only_the_code_is_masked_and_masking_twice_changes_nothing():
    body = "Your Switchboard code is 054321. It expires in 5 minutes."
    masked = redact(body, TEMPLATE)
    assert masked == "Your Switchboard code is ••••••. It expires in 5 minutes."
    assert redact(masked, TEMPLATE) == masked
    assert redact("{code} is your code ({minutes} min)".format(code="9876", minutes=10),
                  "{code} is your code ({minutes} min)") == "•••• is your code (10 min)"


def test_a_body_from_another_template_still_loses_every_long_digit_run():
    assert redact("Code: 123456, valid 5 min", TEMPLATE) == "Code: ••••••, valid 5 min"
