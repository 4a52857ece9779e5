"""Domain plug-ins: one folder per kind of data (toy, audio, molecules, shapes)."""
