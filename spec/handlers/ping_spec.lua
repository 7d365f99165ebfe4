local fake = require "spec.support.fake_gohub"

describe("handlers.ping", function()
  local ping, alice

  before_each(function()
    fake.reset()
    package.loaded["gohub"] = fake
    package.loaded["handlers.ping"] = nil
    ping = require "handlers.ping"
    alice = fake.add_client { id = "c1", user_id = "alice" }
    fake.set_now(1000)
  end)

  it("replies pong with ts, server_ts and rtt", function()
    local reply, data = fake.call(ping, alice, { ts = 400 })
    assert.equal("pong", reply)
    assert.same({ ts = 400, server_ts = 1000, rtt = 600 }, data)
  end)

  it("replies ts null and rtt 0 without ts", function()
    local reply, data = fake.call(ping, alice, {})
    assert.equal("pong", reply)
    assert.same({ ts = fake.json.null, server_ts = 1000, rtt = 0 }, data)
  end)

  it("treats ts null like a missing ts", function()
    local _, data = fake.call(ping, alice, { ts = fake.json.null })
    assert.equal(fake.json.null, data.ts)
    assert.equal(0, data.rtt)
  end)

  it("encodes ts null as null", function()
    local _, data = fake.call(ping, alice, {})
    assert.equal('{"rtt":0,"server_ts":1000,"ts":null}', fake.json.encode(data))
  end)

  it("rejects a ts that is not a number", function()
    local ok, code, message = fake.call(ping, alice, { ts = "now" })
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("ts must be a number", message)
  end)

  it("rejects data that is not an object", function()
    local ok, code, message = fake.call(ping, alice, 42)
    assert.is_nil(ok)
    assert.equal(1001, code)
    assert.equal("data must be an object", message)
  end)
end)
