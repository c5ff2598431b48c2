"""Importers of the field's checkpoint formats (Cohen et al., MACER, CS-RS, plain state dicts)."""
