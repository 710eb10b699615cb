#!/usr/bin/env node
// Prints each avsurv.anomalies.v1 message (an avsurv.v1.AnomalyEvent) as one JSON line.
//
//   node consumer.js [--brokers HOST:PORT[,HOST:PORT]] [--group ID] [--from-beginning] [--max-messages N]
//
// The brokers default to $KAFKA_BROKERS, else localhost:9092. The schema is read at run time from the
// repository's protos/avsurv/v1/messages.proto. Ends on SIGINT/SIGTERM, or after N messages.
"use strict";

const path = require("node:path");
const { parseArgs } = require("node:util");
const { Kafka, logLevel } = require("kafkajs");
const protobuf = require("protobufjs");

const TOPIC = "avsurv.anomalies.v1";
const PROTO = path.join(__dirname, "..", "..", "protos", "avsurv", "v1", "messages.proto");

const { values: args } = parseArgs({
  options: {
    brokers: { type: "string", default: process.env.KAFKA_BROKERS || "localhost:9092" },
    group: { type: "string", default: "avsurv-node-consumer" },
    "from-beginning": { type: "boolean", default: false },
    "max-messages": { type: "string" },
  },
});
const maxMessages = args["max-messages"] === undefined ? Infinity : Number(args["max-messages"]);

const AnomalyEvent = new protobuf.Root().loadSync(PROTO, { keepCase: true }).lookupType("avsurv.v1.AnomalyEvent");

function describe(value) {
  const event = AnomalyEvent.toObject(AnomalyEvent.decode(value), { enums: String, defaults: true, arrays: true });
  return {
    event_id: event.event_id,
    phase: event.phase,
    sequence: event.sequence,
    camera_id: event.header ? event.header.camera_id : "",
    start_time: event.start_time,
    end_time: event.end_time,
    peak_score: event.peak_score,
    threshold: event.threshold,
    deviation: event.deviation,
    clip_ids: event.clip_ids,
  };
}

async function main() {
  // kafkajs logs warnings and errors to stderr; stdout holds only the events.
  const kafka = new Kafka({ clientId: "avsurv-node-consumer", brokers: args.brokers.split(","), logLevel: logLevel.WARN });
  const consumer = kafka.consumer({ groupId: args.group });
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await consumer.disconnect();
    process.exit(0);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);

  await consumer.connect();
  await consumer.subscribe({ topics: [TOPIC], fromBeginning: args["from-beginning"] });
  let seen = 0;
  await consumer.run({
    eachMessage: async ({ message }) => {
      process.stdout.write(JSON.stringify(describe(message.value)) + "\n");
      seen += 1;
      if (seen >= maxMessages) {
        consumer.pause([{ topic: TOPIC }]); // the rest of the batch stays unread (and uncommitted)
        setImmediate(stop); // disconnecting waits for this handler to return
      }
    },
  });
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
