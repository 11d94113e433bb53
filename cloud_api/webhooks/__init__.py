"""Webhooks for integrators (docs/integrators.md): events derived from the audit trail
(``events``), signed (``signing``) and delivered in order per record with retries
(``delivery``); subscriber URLs are checked by ``urls``."""
