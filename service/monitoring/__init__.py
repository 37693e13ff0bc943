"""Models watched in production: feedback labels on logged predictions, live quality per version, and the
prediction log's settings and retention."""
