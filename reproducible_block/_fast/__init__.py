"""Raw-memory speed tricks: views of C states, behind one switch."""
