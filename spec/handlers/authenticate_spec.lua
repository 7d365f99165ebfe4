local fake = require "spec.support.fake_gohub"

describe("handlers.authenticate", function()
  local authenticate, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.authenticate"] = nil
    authenticate = require "handlers.authenticate"
    alice = fake.add_client { id = "c1" }
    fake.add_token("good", {
      sub = "alice",
      username = "Alice",
      permissions = { "join:room", "broadcast" },
      exp = 1700003600,
    })
  end)

  it("replies authenticated with the token's identity", function()
    local reply, data = fake.call(authenticate, alice, { token = "good" })
    assert.equal("authenticated", reply)
    assert.same({
      client_id = "c1",
      user_id = "alice",
      username = "Alice",
      permissions = { "join:room", "broadcast" },
      expires_at = 1700003600,
    }, data)
  end)

  it("gives the client table the identity", function()
    fake.call(authenticate, alice, { token = "good" })
    assert.equal("alice", alice.user_id)
    assert.is_true(alice.authenticated)
    assert.equal("Alice", alice.username)
    assert.same({ "join:room", "broadcast" }, alice.permissions)
    assert.equal("alice", alice.claims.sub)
  end)

  it("makes the client reachable by its new user id", function()
    fake.call(authenticate, alice, { token = "good" })
    assert.equal(1, fake.send_user("alice", "note", { n = 1 }))
    assert.equal(1, #fake.sent_to("c1", "note"))
  end)

  it("encodes permissions as an array and a missing exp as null", function()
    fake.add_token("no-exp", { user_id = "bob", permissions = {} })
    local _, data = fake.call(authenticate, alice, { token = "no-exp" })
    local text = fake.json.encode(data)
    assert.truthy(text:find('"permissions":[]', 1, true))
    assert.truthy(text:find('"expires_at":null', 1, true))
  end)

  it("gives a token without permissions the anonymous ones", function()
    fake.add_token("bare", { sub = "carol", exp = 1700003600 })
    local _, data = fake.call(authenticate, alice, { token = "bare" })
    assert.same({ "join:room", "leave:room", "send:message", "create:room" },
                data.permissions)
  end)

  it("refuses an unknown token with 2003 and keeps the identity", function()
    local ok, code, message = fake.call(authenticate, alice,
                                        { token = "a.b.c" })
    assert.is_nil(ok)
    assert.equal(2003, code)
    assert.equal("bad token signature", message)
    assert.equal("anon-c1", alice.user_id)
    assert.is_false(alice.authenticated)
  end)

  it("refuses an expired token with 2002", function()
    fake.set_now(1700003600000)
    local ok, code, message = fake.call(authenticate, alice,
                                        { token = "good" })
    assert.is_nil(ok)
    assert.equal(2002, code)
    assert.equal("token expired", message)
  end)

  it("answers 2000 when auth is disabled", function()
    fake.set_auth_enabled(false)
    local ok, code = fake.call(authenticate, alice, { token = "good" })
    assert.is_nil(ok)
    assert.equal(2000, code)
    assert.equal("anon-c1", alice.user_id)
  end)

  it("rejects a missing token", function()
    local ok, code, message = fake.call(authenticate, alice, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("token must be a string", message)
  end)

  it("rejects a token that is not a string", function()
    local ok, code, message = fake.call(authenticate, alice, { token = 7 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("token must be a string", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(authenticate, alice, "token")
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)
end)
