"""Training: recipes (config), losses, the loop, the run (setup, resume, save), sampling, schedules, DDP."""
