"""The runtime: what runs escalations over time, above the domain (``core/``), the stores and the
schedulers.

- ``engine``: :class:`EscalationEngine`, trigger and human actions, due processing;
- ``decisions``: what a step or an action does to a record (pure, no I/O);
- ``cas``: read → decide → compare-and-swap, re-reading on a lost race;
- ``outbox``: sending the deliveries a change wrote, with retries;
- ``store_calls``: blocking store calls off the event loop (the one async facade);
- ``worker_pool``: the bounded pool that runs deliveries;
- ``policy_config``: the policies config (``EscalationPolicyConfig``, bounded YAML);
- ``builder``: the one engine builder from that config, and the trigger gates;
- ``manager``: :class:`EscalationPolicyManager`.
"""
