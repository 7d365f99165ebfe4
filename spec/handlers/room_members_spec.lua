local fake = require "spec.support.fake_gohub"

describe("handlers.room_members", function()
  local room_members, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.room_members"] = nil
    room_members = require "handlers.room_members"
    alice = fake.add_client { id = "c1", user_id = "alice" }
    fake.add_client { id = "c2", user_id = "bob" }
    fake.rooms.create("dev")
  end)

  it("replies room_members with client_id and user_id", function()
    fake.rooms.join("c1", "dev")
    fake.rooms.join("c2", "dev")
    local reply, data = fake.call(room_members, alice, { room_id = "dev" })
    assert.equal("room_members", reply)
    assert.same({ room_id = "dev", members = {
      { client_id = "c1", user_id = "alice" },
      { client_id = "c2", user_id = "bob" },
    } }, data)
  end)

  it("sends an empty room's members as []", function()
    local _, data = fake.call(room_members, alice, { room_id = "dev" })
    assert.equal('{"members":[],"room_id":"dev"}', fake.json.encode(data))
  end)

  it("refuses a client without join:room", function()
    local carol = fake.add_client { id = "c3", permissions = {} }
    local ok, code, message = fake.call(room_members, carol,
                                        { room_id = "dev" })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)

  it("answers 3000 for a missing room", function()
    local ok, code, message = fake.call(room_members, alice, { room_id = "x" })
    assert.is_nil(ok)
    assert.equal(3000, code)
    assert.equal("room not found", message)
  end)

  it("rejects a missing room_id", function()
    local ok, code, message = fake.call(room_members, alice, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be a string", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(room_members, alice, false)
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("answers 1001 for an invalid room id", function()
    local ok, code, message = fake.call(room_members, alice, { room_id = "" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be 1 to 128 of A-Z a-z 0-9 _ - : . @", message)
  end)
end)
