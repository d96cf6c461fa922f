"""The events handlers get carry the template's resource templates, so what a handler decides on the
resource (`flowgate.http` lets a decision, and only a decision, take a text/plain body) is reached as in
AWS: `tests.support.apigw` routes each call through the template's route table."""

from __future__ import annotations

import uuid

import pytest

from tests.handler.conftest import ADMIN, Api, load_function

MESSAGE = "Approved after the change review"


@pytest.fixture
def workflow(api: Api) -> Api:
    return Api(load_function("workflow"), "workflow")


def test_a_text_plain_decision_reaches_the_decision_route(workflow: Api) -> None:
    # Given a decision on a task that does not exist, its message sent as text/plain by a workflow tool
    path = f"/api/object/task/{uuid.uuid4()}/action/continue"
    # When it reaches the workflow function through the resource /api/object/task/{uuid}/action/{decision}
    answer = workflow.call("POST", path, raw=MESSAGE, basic=ADMIN, headers={"Content-Type": "text/plain"})
    # Then the body guard let it through to the route, which looked the task up
    assert answer.status == 404, answer.body
    assert answer.error_code == "not_found"


def test_a_text_plain_body_elsewhere_is_still_refused(workflow: Api) -> None:
    # Given the same text/plain body, to a workflow route that takes JSON only
    answer = workflow.call(
        "POST", "/api/config/properties", raw=MESSAGE, basic=ADMIN, headers={"Content-Type": "text/plain"}
    )
    # Then it is refused before the route runs
    assert answer.status == 415, answer.body
    assert answer.error_code == "unsupported_media_type"


def test_a_path_the_template_does_not_route_gets_the_gateways_answer(workflow: Api) -> None:
    # When a path no resource of the template matches is called, or a method a resource does not serve
    unrouted = workflow.call("GET", "/api/object/nothing-here", basic=ADMIN)
    wrong_method = workflow.call("DELETE", f"/api/object/task/{uuid.uuid4()}", basic=ADMIN)
    # Then API Gateway answers itself, without calling the function
    for answer in (unrouted, wrong_method):
        assert answer.status == 403
        assert answer.body == {"message": "Missing Authentication Token"}
        assert answer.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
