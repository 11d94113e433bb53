"""SMS for applicants: a transactional outbox, templates, providers (console, Twilio).

Callers add a message with ``outbox.enqueue_sms`` inside their own transaction; the
``dispatcher.SmsDispatcher`` sends it later. See docs/sms.md.
"""
