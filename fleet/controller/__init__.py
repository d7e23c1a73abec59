"""The fleet controller: kopf handlers wiring selection, rendering and apply together."""
