"""The service noticing failures itself: failure routes (data) and the detector (docs/routes.md).

- :mod:`.routes` the ``routes:`` section of the policies file: match, precedence, incident key
  (no Airflow import);
- :mod:`.explain` "which route would catch this and what would happen";
- :mod:`.watcher` the loop in the API server reading failures from the metadata database.
"""
