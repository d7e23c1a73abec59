"""Render: an add-on's objects for one cluster, from Jinja2 templates (`templates`) or a
Helm chart (`helm`). Pure but for `helm template`, which runs as a subprocess."""
