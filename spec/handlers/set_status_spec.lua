local fake = require "spec.support.fake_gohub"

describe("handlers.set_status", function()
  local set_status, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.set_status"] = nil
    set_status = require "handlers.set_status"
    alice = fake.add_client { id = "c1", user_id = "alice" }
    fake.add_client { id = "c2", user_id = "bob" }
    fake.add_client { id = "c3", user_id = "carol" }
  end)

  it("replies status_set", function()
    local reply, data = fake.call(set_status, alice, { status = "away" })
    assert.equal("status_set", reply)
    assert.same({ status = "away" }, data)
  end)

  it("keeps the status in client.ctx", function()
    fake.call(set_status, alice, { status = "away" })
    assert.equal("away", alice.ctx.status)
  end)

  it("tells the other members of the client's rooms", function()
    fake.rooms.join("c1", "dev")
    fake.rooms.join("c2", "dev")
    fake.clear_sent()
    fake.call(set_status, alice, { status = "away" })
    assert.same({ { to = "c2", type = "status_changed",
                    data = { client_id = "c1", user_id = "alice",
                             status = "away" },
                    json = '{"client_id":"c1","status":"away",'
                           .. '"user_id":"alice"}' } }, fake.sent)
  end)

  it("tells every room the client is in", function()
    fake.rooms.join("c1", "dev")
    fake.rooms.join("c2", "dev")
    fake.rooms.join("c1", "ops")
    fake.rooms.join("c3", "ops")
    fake.clear_sent()
    fake.call(set_status, alice, { status = "away" })
    assert.equal(1, #fake.sent_to("c2", "status_changed"))
    assert.equal(1, #fake.sent_to("c3", "status_changed"))
  end)

  it("sends nothing when the client is in no room", function()
    fake.call(set_status, alice, { status = "away" })
    assert.same({}, fake.sent)
  end)

  it("accepts 64 characters, multi-byte ones too", function()
    local reply = fake.call(set_status, alice, { status = ("é"):rep(64) })
    assert.equal("status_set", reply)
  end)

  it("rejects a missing status", function()
    local ok, code, message = fake.call(set_status, alice, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("status must be a string", message)
  end)

  it("rejects an empty status", function()
    local ok, code, message = fake.call(set_status, alice, { status = "" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("status must be 1 to 64 characters", message)
  end)

  it("rejects a status over 64 characters", function()
    local ok, code = fake.call(set_status, alice, { status = ("x"):rep(65) })
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("refuses a client without send:message", function()
    local mute = fake.add_client { id = "c4", permissions = {} }
    local ok, code, message = fake.call(set_status, mute, { status = "away" })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)
end)
