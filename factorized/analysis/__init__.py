"""Reading results: a sweep's table and reports, plots, the statistics of seed noise
(stats.py), a results folder's findings and README headline, notebooks' helpers."""
