"""Alerting: rules over probe results, the alert state machine, routing and delivery."""
