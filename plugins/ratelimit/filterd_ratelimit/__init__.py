"""filterd's ratelimit plugin: messages, recipients and bytes per sender, client, recipient or
SASL user over sliding windows (see README.md). :mod:`filterd_ratelimit.window` is the counting
core other plugins (the ``rules`` plugin's rate actions) can call."""
