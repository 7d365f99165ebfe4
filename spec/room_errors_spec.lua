local fake = require "spec.support.fake_gohub"

describe("lib.room_errors", function()
  local room_errors

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["lib.room_errors"] = nil
    room_errors = require "lib.room_errors"
  end)

  it("answers out_of_memory with 1003, a server error", function()
    local _, code, message = room_errors.reply("out_of_memory")
    assert.equal(fake.errors.SERVER_ERROR, code)
    assert.equal("server error", message)
  end)

  it("answers an unknown error with 1000 and the error in details", function()
    local _, code, _, details = room_errors.reply("strange")
    assert.equal(fake.errors.UNKNOWN, code)
    assert.same({ reason = "strange" }, details)
  end)
end)
