"""fleet's admission webhooks: pure decisions on pods and Secrets, and the server that asks them."""
