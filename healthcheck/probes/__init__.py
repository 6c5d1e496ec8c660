"""The probe kinds: http, tcp, tls, dns (the registry and the Prober are in healthcheck.prober)."""
