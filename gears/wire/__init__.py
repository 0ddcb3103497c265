"""What crosses process and network boundaries: RESP codecs, the node–worker channel,
every message kind (:mod:`gears.wire.protocol`), logins and TLS. Used by every process;
imports only :mod:`gears.errors`."""
