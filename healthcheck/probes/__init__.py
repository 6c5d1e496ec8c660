"""The probe kinds (http, tcp, tls, dns here; the canaries in inference_probe), what a kind
declares (base.py, plugin.py), the HTTP client they share and the lazy registry of kinds."""
