"""The probe kinds (http, tcp, tls, dns, grpc, websocket, udp, icmp, starttls here; the canaries
onnx and inference in inference_probe), the RDAP lookup behind [DOMAIN_EXPIRATION] (rdap), what a
kind declares (base.py, plugin.py), the HTTP client they share and the lazy registry of kinds."""
