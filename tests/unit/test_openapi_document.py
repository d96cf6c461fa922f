"""The served OpenAPI document is the one the code produces, and it covers exactly the template's routes."""

from devstack import openapi


def test_the_committed_document_is_current():
    # Given the document produced from every function's resolver now
    produced = openapi.render(openapi.build_document())
    # Then the file the identity function serves is identical (else: run `make openapi`)
    assert openapi.DOCUMENT.read_text() == produced


def test_template_routes_and_resolver_routes_are_the_same_set():
    documented = openapi.documented_routes(openapi.build_document())
    served_by_template = openapi.template_routes() - {("GET", "/api/latest/openapi.json")}
    assert served_by_template == documented
