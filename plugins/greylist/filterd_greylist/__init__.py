"""filterd's greylist plugin: postgrey 1.37's greylisting (see README.md)."""
