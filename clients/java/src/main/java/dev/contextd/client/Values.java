package dev.contextd.client;

import com.google.protobuf.ListValue;
import com.google.protobuf.NullValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import io.grpc.Status;
import java.lang.reflect.Array;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Converts between plain Java values (maps, lists, strings, numbers, booleans, null) and
 * {@code google.protobuf.Struct}/{@code Value}, the wire form of contexts and tool arguments.
 */
public final class Values {
  private Values() {}

  /**
   * Converts a map to a Struct; {@code null} stays {@code null} ("not set").
   *
   * @throws io.grpc.StatusRuntimeException INVALID_ARGUMENT when a value is not JSON-like
   */
  public static Struct toStruct(Map<String, ?> map) {
    if (map == null) {
      return null;
    }
    Struct.Builder b = Struct.newBuilder();
    for (Map.Entry<String, ?> e : map.entrySet()) {
      b.putFields(e.getKey(), toValue(e.getValue(), e.getKey()));
    }
    return b.build();
  }

  /** Converts a Struct to an ordered, unmodifiable map; {@code null} gives an empty map. */
  public static Map<String, Object> fromStruct(Struct struct) {
    if (struct == null) {
      return Map.of();
    }
    Map<String, Object> out = new LinkedHashMap<>();
    struct.getFieldsMap().forEach((k, v) -> out.put(k, fromValue(v)));
    return Collections.unmodifiableMap(out);
  }

  /**
   * Converts a Value to Java: null, Boolean, Double, String, List or Map. Protobuf's Value
   * holds numbers as doubles, so every number comes back as a Double.
   */
  public static Object fromValue(Value v) {
    switch (v.getKindCase()) {
      case BOOL_VALUE:
        return v.getBoolValue();
      case NUMBER_VALUE:
        return v.getNumberValue();
      case STRING_VALUE:
        return v.getStringValue();
      case STRUCT_VALUE:
        return fromStruct(v.getStructValue());
      case LIST_VALUE:
        List<Object> list = new ArrayList<>();
        for (Value item : v.getListValue().getValuesList()) {
          list.add(fromValue(item));
        }
        return Collections.unmodifiableList(list);
      default:
        return null;
    }
  }

  /** Converts a Java value to a Value (see {@link #toStruct}). */
  public static Value toValue(Object o) {
    return toValue(o, "value");
  }

  private static Value toValue(Object o, String path) {
    if (o == null) {
      return Value.newBuilder().setNullValue(NullValue.NULL_VALUE).build();
    }
    if (o instanceof Value value) {
      return value;
    }
    if (o instanceof Boolean bool) {
      return Value.newBuilder().setBoolValue(bool).build();
    }
    if (o instanceof Number number) {
      double d = number.doubleValue();
      if (Double.isNaN(d) || Double.isInfinite(d)) {
        throw invalid(path, "is " + d + ", which JSON cannot hold");
      }
      return Value.newBuilder().setNumberValue(d).build();
    }
    if (o instanceof CharSequence || o instanceof Character || o instanceof Enum<?>) {
      String s = o instanceof Enum<?> e ? e.name() : o.toString();
      return Value.newBuilder().setStringValue(s).build();
    }
    if (o instanceof Struct struct) {
      return Value.newBuilder().setStructValue(struct).build();
    }
    if (o instanceof Map<?, ?> map) {
      Struct.Builder b = Struct.newBuilder();
      for (Map.Entry<?, ?> e : map.entrySet()) {
        if (!(e.getKey() instanceof String key)) {
          throw invalid(path, "has a key that is not a string: " + e.getKey());
        }
        b.putFields(key, toValue(e.getValue(), path + "." + key));
      }
      return Value.newBuilder().setStructValue(b).build();
    }
    if (o instanceof Iterable<?> iterable) {
      ListValue.Builder b = ListValue.newBuilder();
      int i = 0;
      for (Object item : iterable) {
        b.addValues(toValue(item, path + "[" + i++ + "]"));
      }
      return Value.newBuilder().setListValue(b).build();
    }
    if (o.getClass().isArray()) {
      ListValue.Builder b = ListValue.newBuilder();
      for (int i = 0; i < Array.getLength(o); i++) {
        b.addValues(toValue(Array.get(o, i), path + "[" + i + "]"));
      }
      return Value.newBuilder().setListValue(b).build();
    }
    throw invalid(path, "is a " + o.getClass().getName() + ", not a JSON value (map, list, string, number, boolean or null)");
  }

  private static RuntimeException invalid(String path, String what) {
    return Status.INVALID_ARGUMENT.withDescription("context " + path + " " + what).asRuntimeException();
  }
}
