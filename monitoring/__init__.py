"""What operators alert on: ``/metrics`` for Prometheus (django-prometheus's HTTP and database metrics, and the
platform's own, read from the database at each scrape), protected by a bearer token or an address list."""
