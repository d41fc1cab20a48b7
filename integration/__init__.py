"""Outside the office: the city platform hand-off (数字城管 / 城运平台) and the team notifications.

- :mod:`~nonsite.integration.platform`: a case as the platform's JSON (a sandboxed template per platform),
  coordinates, signed evidence links;
- :mod:`~nonsite.integration.connector`: the durable outbox of case reports, signed POSTs with retries and
  backoff, the dead-letter list, the worker thread;
- :mod:`~nonsite.integration.inbound`: the platform's signed status callbacks → a workflow action;
- :mod:`~nonsite.integration.notify`: WeCom / DingTalk group robots and an SMS gateway, batched and
  rate-limited.

See docs/integration.md. Nothing here loads detection code.
"""
