local fake = require "spec.support.fake_gohub"

describe("handlers.delete_room", function()
  local delete_room, admin

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.delete_room"] = nil
    delete_room = require "handlers.delete_room"
    admin = fake.add_client { id = "c1", user_id = "root",
                              permissions = { "delete:room" } }
    fake.rooms.create("dev")
  end)

  it("deletes the room and replies room_deleted", function()
    local reply, data = fake.call(delete_room, admin, { room_id = "dev" })
    assert.equal("room_deleted", reply)
    assert.same({ room_id = "dev" }, data)
    assert.is_nil(fake.rooms.get("dev"))
  end)

  it("lets admin:system delete", function()
    local boss = fake.add_client { id = "c2", permissions = { "admin:system" } }
    local reply = fake.call(delete_room, boss, { room_id = "dev" })
    assert.equal("room_deleted", reply)
  end)

  it("refuses a client without delete:room", function()
    local anon = fake.add_client { id = "c2" }
    local ok, code, message = fake.call(delete_room, anon, { room_id = "dev" })
    assert.is_nil(ok)
    assert.equal(2001, code)
    assert.equal("forbidden", message)
  end)

  it("answers 3000 for a missing room", function()
    local ok, code, message = fake.call(delete_room, admin, { room_id = "x" })
    assert.is_nil(ok)
    assert.equal(3000, code)
    assert.equal("room not found", message)
  end)

  it("rejects a missing room_id", function()
    local ok, code, message = fake.call(delete_room, admin, {})
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be a string", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code = fake.call(delete_room, admin, 1)
    assert.is_nil(ok)
    assert.equal(1001, code)
  end)

  it("answers 1001 for an invalid room id", function()
    local ok, code, message = fake.call(delete_room, admin, { room_id = "x*" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("room_id must be 1 to 128 of A-Z a-z 0-9 _ - : . @", message)
  end)
end)
