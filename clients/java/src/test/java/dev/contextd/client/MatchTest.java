package dev.contextd.client;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.google.gson.JsonParser;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Pins the matching rules of the scenario format, both ways. */
class MatchTest {
  @ParameterizedTest(name = "{0} against {1}: {2}")
  @CsvSource(delimiter = '|', value = {
      "{\"a\": 1}                    | {\"a\": 1, \"b\": 2}        | true",
      "{\"a\": 1}                    | {\"b\": 1}                 | false",
      "{\"n\": 27}                   | {\"n\": \"27\"}            | true",
      "{\"n\": 27}                   | {\"n\": \"28\"}            | false",
      "{\"n\": 1}                    | {\"n\": 1.0}               | true",
      "[1, 2]                        | [1, 2, 3]                  | false",
      "[{\"a\": 1}]                  | [{\"a\": 1, \"b\": 0}]     | true",
      "{\"id\": \"$nonempty\"}       | {\"id\": \"t-1\"}          | true",
      "{\"id\": \"$nonempty\"}       | {\"id\": \"\"}             | false",
      "{\"id\": \"$nonempty\"}       | {}                         | false",
      "{\"c\": {\"$exact\": {\"a\": 1}}} | {\"c\": {\"a\": 1}}      | true",
      "{\"c\": {\"$exact\": {\"a\": 1}}} | {\"c\": {\"a\": 1, \"b\": 2}} | false",
      "{\"s\": \"x\"}                | {\"s\": \"y\"}             | false",
      "{\"b\": false}                | {\"b\": false}             | true",
      "{\"v\": null}                 | {\"v\": null}              | true",
      "{\"v\": null}                 | {\"v\": 0}                 | false",
  })
  void matches(String expected, String actual, boolean ok) {
    String diff = Scenarios.match(JsonParser.parseString(expected), JsonParser.parseString(actual), "");
    assertEquals(ok, diff == null, () -> "diff: " + diff);
  }
}
