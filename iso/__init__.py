"""The appliance: ISO preparer and first-boot hook."""
