"""The quickest tour: sign up, create a project, an environment and a key, call with it."""

from __future__ import annotations

from tests.helpers import Api

VIEWER = "{ viewer { kind scopes user { id } apiKey { id name } environment { id name } } }"


async def test_a_new_user_can_issue_a_key_and_call_with_it(api: Api) -> None:
    # given
    token = await api.sign_up("ada@example.com")
    project_id = await api.create_project(token, "Docs")
    environment_id = await api.create_environment(token, project_id, "Production")
    key_id, secret = await api.create_key(token, environment_id, ["GENERATE_DOCUMENTS"])

    # when
    result = await api.gql(VIEWER, token=secret)

    # then
    assert result.ok()["viewer"] == {
        "kind": "API_KEY",
        "scopes": ["GENERATE_DOCUMENTS"],
        "user": {"id": await api.user_id(token)},
        "apiKey": {"id": key_id, "name": "server"},
        "environment": {"id": environment_id, "name": "Production"},
    }
