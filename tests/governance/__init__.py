"""Behaviour tests of ``mutator_governance``: lifecycle, approvals, resolution and queries."""
