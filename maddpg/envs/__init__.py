"""Environments: the mpe2 adapter, scenario table and agent specs."""
