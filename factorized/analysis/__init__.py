"""Reading results: a sweep's table and reports, plots, findings, notebooks' helpers."""
