"""cgroups: one interface over v1, v2 and hybrid hierarchies."""
