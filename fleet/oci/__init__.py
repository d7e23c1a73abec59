"""An OCI distribution client and a registry-to-registry replicator (fleet/oci/).

Built on aiohttp (a kopf dependency already) rather than oras-py: oras-py uploads
blobs from files only (no streaming from one registry into another without a
temporary file), has no cross-repository mount and cannot resume an upload from
the offset a registry reports.
"""
