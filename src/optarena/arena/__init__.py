"""The arena: entrants, the submission clock, trials, tuning, scoring, storage and the suite runner."""
