"""Pipeline stages (play, discover, patch) and the run store they write."""
