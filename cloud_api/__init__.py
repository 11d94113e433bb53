"""The cloud side of Xinbao: approval records, lockers, handovers, codes, staff, audit trail.

``cloud_api.main.create_app(settings)`` builds the FastAPI application; ``docs/api.md`` walks
through the API and ``docs/codes.md`` through the code scheme.
"""
