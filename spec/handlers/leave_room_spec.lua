local fake = require "spec.support.fake_gohub"

describe("handlers.leave_room", function()
  local leave_room, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.leave_room"] = nil
    leave_room = require "handlers.leave_room"
    alice = fake.add_client { id = "c1", user_id = "alice" }
    fake.rooms.create("lobby")
  end)

  it("leaves the room and replies room_left", function()
    fake.rooms.join("c1", "lobby")
    local reply, data = fake.call(leave_room, alice, { room_id = "lobby" })
    assert.equal("room_left", reply)
    assert.same({ room_id = "lobby", status = "left" }, data)
    assert.is_false(fake.rooms.is_member("c1", "lobby"))
  end)

  it("needs no permission", function()
    local carol = fake.add_client { id = "c3", permissions = {} }
    fake.rooms.join("c3", "lobby")
    local reply = fake.call(leave_room, carol, { room_id = "lobby" })
    assert.equal("room_left", reply)
  end)

  it("answers 3003 when not a member", function()
    local ok, code, message = fake.call(leave_room, alice,
                                        { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(3003, code)
    assert.equal("not in room", message)
  end)

  it("answers 3000 for a missing room", function()
    local ok, code, message = fake.call(leave_room, alice, { room_id = "nope" })
    assert.is_nil(ok)
    assert.equal(3000, code)
    assert.equal("room not found", message)
  end)

  it("answers 1001 for an invalid room id", function()
    local ok, code, message = fake.call(leave_room, alice, { room_id = "" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be 1 to 128 of A-Z a-z 0-9 _ - : . @", message)
  end)

  it("rejects a missing room_id", function()
    local ok, code, message = fake.call(leave_room, alice, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be a string", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(leave_room, alice, fake.json.null)
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)
end)
