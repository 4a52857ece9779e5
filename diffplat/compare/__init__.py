"""Cross-domain comparison of schedules, targets, weightings and samplers
(``diffplat compare``): ``grid`` validates a comparison file, ``runner`` trains and scores
its cells in worker processes, ``report`` writes the tables and plots."""
