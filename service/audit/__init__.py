"""The audit log: who changed what, when, written in the transaction of the change (``service``), and
``GET /v1/audit`` to read it (``router``)."""
