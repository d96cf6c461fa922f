from flowgate import passwords


def test_hash_is_argon2id_phc_and_salted():
    # Given one password hashed twice
    first, second = (
        passwords.hash_password("correct horse battery"),
        passwords.hash_password("correct horse battery"),
    )
    # Then both are Argon2id PHC strings with their own salt
    assert first.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert first != second


def test_verify_accepts_the_password_and_refuses_others():
    encoded = passwords.hash_password("correct horse battery")
    assert passwords.verify_password("correct horse battery", encoded)
    assert not passwords.verify_password("correct horse batterY", encoded)
    assert not passwords.verify_password("", encoded)


def test_verify_honours_the_parameters_stored_in_the_hash(monkeypatch):
    # Given a hash made with weaker, older parameters
    monkeypatch.setattr(passwords, "MEMORY_KIB", 8 * 1024)
    monkeypatch.setattr(passwords, "ITERATIONS", 1)
    old = passwords.hash_password("an older password")
    monkeypatch.undo()
    # Then it still verifies after the defaults were raised
    assert "m=8192,t=1" in old
    assert passwords.verify_password("an older password", old)


def test_malformed_hashes_never_match():
    for junk in (
        "",
        "plain",
        "$scrypt$v=1$m=1$salt$hash",
        "$argon2id$v=19$m=x,t=2,p=1$AAAA$BBBB",
        "$argon2id$v=19$$$",
    ):
        assert not passwords.verify_password("anything", junk)
