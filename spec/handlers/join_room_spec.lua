local fake = require "spec.support.fake_gohub"

describe("handlers.join_room", function()
  local join_room, alice, bob

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.join_room"] = nil
    join_room = require "handlers.join_room"
    alice = fake.add_client { id = "c1", user_id = "alice" }
    bob = fake.add_client { id = "c2", user_id = "bob" }
  end)

  it("joins the room and replies room_joined", function()
    local reply, data = fake.call(join_room, alice, { room_id = "lobby" })
    assert.equal("room_joined", reply)
    assert.same({ room_id = "lobby", status = "joined", member_count = 1 },
                data)
    assert.is_true(fake.rooms.is_member("c1", "lobby"))
  end)

  it("counts the members already in the room", function()
    fake.rooms.join("c2", "lobby")
    local _, data = fake.call(join_room, alice, { room_id = "lobby" })
    assert.equal(2, data.member_count)
  end)

  it("checks join:room with the room id as target", function()
    local asked
    fake.set_permissions({
      can = function(_, permission, target)
        asked = { permission, target }
        return true
      end,
    })
    fake.call(join_room, alice, { room_id = "lobby" })
    assert.same({ "join:room", "lobby" }, asked)
  end)

  it("refuses a client without join:room", function()
    local carol = fake.add_client { id = "c3", permissions = {} }
    local ok, code, message = fake.call(join_room, carol, { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)

  it("rejects a missing room_id", function()
    local ok, code, message = fake.call(join_room, alice, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be a string", message)
  end)

  it("rejects a room_id that is not a string", function()
    local ok, code, message = fake.call(join_room, alice, { room_id = 12 })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be a string", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code, message = fake.call(join_room, alice, "lobby")
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("data must be an object", message)
  end)

  it("answers 3000 for a missing room when auto_create is off", function()
    fake.configure { rooms = { auto_create = false } }
    local ok, code, message = fake.call(join_room, alice, { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(3000, code)
    assert.equal("room not found", message)
  end)

  it("answers 3002 when the room is full", function()
    fake.rooms.create("lobby", { max_clients = 1 })
    fake.rooms.join("c2", "lobby")
    local ok, code, message = fake.call(join_room, alice, { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(3002, code)
    assert.equal("room full", message)
  end)

  it("answers 3004 when already a member", function()
    fake.rooms.join("c1", "lobby")
    local ok, code, message = fake.call(join_room, alice, { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(3004, code)
    assert.equal("already in room", message)
  end)

  it("answers 1001 for an invalid room id", function()
    local ok, code, message = fake.call(join_room, alice,
                                        { room_id = "no spaces" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be 1 to 128 of A-Z a-z 0-9 _ - : . @", message)
  end)

  it("answers 2001 when the client is in too many rooms", function()
    fake.configure { rooms = { max_rooms_per_client = 1 } }
    fake.rooms.join("c1", "other")
    local ok, code, message = fake.call(join_room, alice, { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("too many rooms", message)
  end)

  it("answers 1003 when the room's owner node gives no seat in time", function()
    local join = fake.rooms.join
    finally(function() fake.rooms.join = join end)
    fake.rooms.join = function() return nil, "unavailable" end
    local ok, code, message = fake.call(join_room, alice, { room_id = "lobby" })
    assert.is_nil(ok)
    assert.equal(1003, code)
    assert.equal("room owner unavailable, try again", message)
  end)

  it("answers 1000 for any other error", function()
    local gone = { id = "c9", user_id = "gone", permissions = { "join:room" },
                   ctx = {} }
    local ok, code, _, details = fake.call(join_room, gone, { room_id = "x" })
    assert.is_nil(ok)
    assert.equal(1000, code)
    assert.same({ reason = "offline" }, details)
  end)
end)
