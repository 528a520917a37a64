"""What a reader sees: charts, HTML, text and widgets. Importing any of them first keeps jsonschema's slow optional
IRI parser out of the process (:func:`lexprobe.views.offline.skip_iri_parser`), before altair is imported."""

from lexprobe.views.offline import skip_iri_parser

skip_iri_parser()
