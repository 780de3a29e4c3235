"""Amaranth generators of the screc device's cores."""
