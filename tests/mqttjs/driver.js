// One MQTT.js client per process, driven by tests/interop_mqttjs.rs.
//
// Argument: a JSON object with
//   url       "mqtt://host:port", "mqtts://...", "ws://host:port/path" or "wss://..."
//   id        client id ("" lets a 5.0 broker assign one)
//   version   3 (MQTT 3.1), 4 (3.1.1) or 5
//   clean     clean session / clean start (default true)
//   ca        optional PEM file to trust (mqtts, wss); servername: the name to verify
//             (the URL names 127.0.0.1: "localhost" may resolve to ::1 first)
//   connect_properties, will {topic, payload, qos, retain, properties}
//   subscribe [{filter, qos, nl, rap, rh}], subscribe_properties
//   publish   [{topic, payload, qos, retain, properties}], each awaited to completion
//   expect    messages to wait for; quiet_ms: a further wait to catch extras
//   end       "disconnect" (default), "disconnect_with_will" (5.0 reason 0x04), or "close"
//             (the socket destroyed: no DISCONNECT)
// It prints one JSON object per line per event: connack, suback, published, message,
// disconnect (a DISCONNECT from the broker), error, timeout, done.
'use strict';
const fs = require('fs');
const mqtt = require('mqtt');

const cfg = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const fail = (what) => {
  out({ event: 'error', what: String(what) });
  process.exit(2);
};
// A deadline for the whole process, whatever it waits on (shorter than the test's wait
// for any one event, so that the test sees why).
setTimeout(() => {
  out({ event: 'timeout' });
  process.exit(3);
}, (cfg.timeout || 15) * 1000).unref();
// Set once the driver leaves on purpose: a close before that is a failure.
let leaving = false;

const messages = [];
const completed = [];
let wanted = null;

// Buffers are shown as text; a property's Buffer (correlation data) as well.
const plain = (props) => {
  if (!props) return undefined;
  const o = {};
  for (const [k, v] of Object.entries(props)) o[k] = Buffer.isBuffer(v) ? v.toString() : v;
  return o;
};
const bufferProps = (props) => {
  if (props && typeof props.correlationData === 'string') {
    props.correlationData = Buffer.from(props.correlationData);
  }
  return props;
};

const opts = {
  clientId: cfg.id,
  protocolVersion: cfg.version,
  protocolId: cfg.version === 3 ? 'MQIsdp' : 'MQTT',
  clean: cfg.clean !== false,
  keepalive: 60,
  reconnectPeriod: 0,
  connectTimeout: 15000,
  properties: cfg.connect_properties,
  autoUseTopicAlias: !!cfg.auto_topic_alias,
};
if (cfg.will) {
  opts.will = {
    topic: cfg.will.topic,
    payload: Buffer.from(cfg.will.payload),
    qos: cfg.will.qos,
    retain: cfg.will.retain,
    properties: cfg.will.properties,
  };
}
if (cfg.ca) {
  opts.ca = fs.readFileSync(cfg.ca);
  opts.rejectUnauthorized = true;
}
if (cfg.servername) {
  opts.servername = cfg.servername;
  opts.wsOptions = { servername: cfg.servername };
}

const client = mqtt.connect(cfg.url, opts);
client.on('error', (e) => fail(e && e.message ? e.message : e));
client.on('close', () => {
  if (!leaving) fail('the connection closed');
});
client.on('disconnect', (p) =>
  out({ event: 'disconnect', rc: p.reasonCode, properties: plain(p.properties) }),
);
client.on('message', (topic, payload, packet) => {
  const m = {
    topic,
    payload: payload.toString(),
    qos: packet.qos,
    retain: packet.retain,
    dup: packet.dup,
  };
  if (cfg.version === 5) m.properties = plain(packet.properties) || {};
  messages.push(m);
  out(Object.assign({ event: 'message' }, m));
  if (wanted && messages.length >= cfg.expect) wanted();
});

const connected = new Promise((resolve) => client.once('connect', resolve));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  const connack = await connected;
  out({
    event: 'connack',
    rc: connack.reasonCode !== undefined ? connack.reasonCode : connack.returnCode || 0,
    session_present: !!connack.sessionPresent,
    properties: plain(connack.properties),
    client_id: client.options.clientId,
  });

  if (cfg.subscribe) {
    const subs = {};
    for (const s of cfg.subscribe) {
      subs[s.filter] = { qos: s.qos, nl: !!s.nl, rap: !!s.rap, rh: s.rh || 0 };
    }
    const subOpts = cfg.subscribe_properties ? { properties: cfg.subscribe_properties } : {};
    const granted = await client.subscribeAsync(subs, subOpts);
    out({ event: 'suback', granted: granted.map((g) => g.qos) });
  }

  for (const p of cfg.publish || []) {
    const o = { qos: p.qos, retain: !!p.retain };
    if (p.properties) o.properties = bufferProps(p.properties);
    const ack = await client.publishAsync(p.topic, p.payload, o);
    completed.push(p.payload);
    out({ event: 'published', payload: p.payload, rc: ack && ack.reasonCode });
  }

  if (cfg.expect && messages.length < cfg.expect) {
    await new Promise((resolve) => {
      wanted = resolve;
    });
  }
  if (cfg.quiet_ms) await sleep(cfg.quiet_ms);

  const done = () => out({ event: 'done', messages, completed });
  const end = cfg.end || 'disconnect';
  leaving = true;
  if (end === 'close') {
    done();
    client.stream.destroy();
    process.exit(0);
  }
  const endOpts = end === 'disconnect_with_will' ? { reasonCode: 0x04 } : {};
  await client.endAsync(false, endOpts);
  done();
  process.exit(0);
})().catch(fail);
